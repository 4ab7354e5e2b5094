"""stub"""
from pipeline.data.sources import Source


class Flowers102(Source):
    name = "flowers102"
