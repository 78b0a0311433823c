"""Image databases: PASCAL VOC, COCO, any VOC-format folder and the synthetic shapes set."""
from .imdb import DatasetError, imdb
from .factory import get_imdb, list_imdbs

__all__ = ["DatasetError", "imdb", "get_imdb", "list_imdbs"]
