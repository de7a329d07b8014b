from tests.controller.backends import backends
from tests.kube_fixtures import kube, standin_only

__all__ = ["backends", "kube", "standin_only"]
