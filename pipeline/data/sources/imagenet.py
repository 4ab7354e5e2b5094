"""stub"""
from pipeline.data.sources import Source


class ImageNet(Source):
    name = "imagenet"
