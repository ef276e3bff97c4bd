"""The policy's MLflow model from code: MLflow runs this file to build the model it loads.

``mlflow_model.log_model`` passes this file as ``python_model`` (MLflow's models-from-code convention,
so nothing is cloudpickled); the weights come from the model's ``policy`` artifact in ``load_context``.
"""

from mlflow.models import set_model

from recsys_rl.mlflow_model import BannerPolicyModel

set_model(BannerPolicyModel())
