"""The reward model's MLflow model from code: MLflow runs this file to build the model it loads.

``log_reward_model`` passes this file as ``python_model`` (MLflow's models-from-code convention, so
nothing is cloudpickled); the model's weights come from its ``weights`` artifact in ``load_context``.
"""

from mlflow.models import set_model

from recsys_rl.reward_model.packaging import RewardModelPyfunc

set_model(RewardModelPyfunc())
