from tests.kube_fixtures import kube, standin_only

__all__ = ["kube", "standin_only"]
