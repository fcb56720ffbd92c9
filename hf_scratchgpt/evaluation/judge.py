"""An LLM judge that scores answers 0-100 against a reference, as in "LLMs from scratch" chapter 7.

The judge is any chat model: a local ``transformers`` model (`LocalJudge`) or any OpenAI-compatible
endpoint (`OpenAIJudge`: OpenAI, vLLM, Ollama, ``transformers serve``, ``scratchgpt serve``), both called
greedily. Each item keeps the judge's raw reply and the score read from it; a reply with no integer in
0-100 scores None and is left out of the mean (and counted), so a weak judge cannot pass for a harsh one.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..serve.chat import generate_reply

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "Given the input `{instruction}` and correct output `{reference}`, score the model response "
    "`{response}` on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only."
)
_INTEGER = re.compile(r"(?<![\d.])\d{1,3}(?![\d.])")


def judge_prompt(instruction: str, reference: str, response: str) -> str:
    return JUDGE_PROMPT.format(instruction=instruction, reference=reference, response=response)


def parse_score(reply: str) -> int | None:
    """The first whole number in ``reply`` if it is within 0-100, else None."""
    match = _INTEGER.search(reply)
    if match is None:
        return None
    score = int(match.group())
    return score if 0 <= score <= 100 else None


class OpenAIJudge:
    """A judge behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    The key is read from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``); local
    servers that need none get a placeholder. A request the server refuses as bad (HTTP 400, e.g. a prompt
    too long for the judge) gets an empty reply (no score) and a warning; other errors stop the run.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_tokens: int = 16):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "not-needed")
        self.model, self.max_tokens = model, max_tokens

    def __call__(self, prompt: str) -> str:
        from openai import BadRequestError

        try:
            completion = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0,
                max_tokens=self.max_tokens,
            )
        except BadRequestError as error:  # e.g. the prompt is too long for the judge: no score for this item
            logger.warning("Judge gave no reply: %s", error)
            return ""
        return completion.choices[0].message.content or ""


class LocalJudge:
    """A local chat model (folder or Hub id, or a loaded model and tokenizer) as the judge. A prompt longer
    than its context gets an empty reply (no score) and a warning."""

    def __init__(
        self, model: Any, tokenizer: Any = None, max_new_tokens: int = 16, trust_remote_code: bool = False
    ):
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=trust_remote_code)
        if tokenizer.chat_template is None:
            raise ValueError(
                "The judge model's tokenizer has no chat template: use an instruction-tuned model."
            )
        self.model, self.tokenizer, self.max_new_tokens = model.eval(), tokenizer, max_new_tokens

    def __call__(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        try:
            return generate_reply(
                self.model, self.tokenizer, messages, max_new_tokens=self.max_new_tokens, temperature=0
            )
        except ValueError as error:  # the prompt does not fit the judge's context: no score for this item
            logger.warning("Judge gave no reply: %s", error)
            return ""


def judge_answers(judge: Callable[[str], str], answers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score each ``{"prompt", "output", "reference"}``: the same dicts with ``judge_reply`` and ``judge_score``."""
    judged = []
    for answer in answers:
        reply = judge(judge_prompt(answer["prompt"], answer["reference"], answer["output"]))
        judged.append({**answer, "judge_reply": reply, "judge_score": parse_score(reply)})
    return judged
