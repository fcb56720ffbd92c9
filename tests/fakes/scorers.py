"""A fake lm-eval model whose answers the test plants: accuracy and baselines become known numbers."""

from lm_eval.api.model import LM


class PlantedScorer(LM):
    """Scores a (context, continuation) request 0 when ``is_right`` says so, else -10."""

    def __init__(self, is_right):
        super().__init__()
        self.is_right = is_right

    def loglikelihood(self, requests):
        return [(0.0, True) if self.is_right(*r.args) else (-10.0, False) for r in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

    def generate_until(self, requests):
        raise NotImplementedError
