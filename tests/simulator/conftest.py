import pytest

from simulator import Simulator
from tests.simulator.worlds import small_config


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(small_config())


@pytest.fixture(scope="module")
def cascade_sim() -> Simulator:
    return Simulator(small_config(click_model="cascade"))
