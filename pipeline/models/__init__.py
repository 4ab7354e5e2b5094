"""Scaled networks through timm's builders (``build``) and their complexity: flops, params, activations
(``complexity``)."""
