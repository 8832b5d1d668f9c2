"""Multimodal ranking: features, LightGBM LambdaRank, a differentiable DIN-style ranker, metrics."""
