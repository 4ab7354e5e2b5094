"""stub"""
from pipeline.data.sources import Source


class Cifar100(Source):
    name = "cifar100"
