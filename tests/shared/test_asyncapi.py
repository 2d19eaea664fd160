"""The AsyncAPI document names every error code and step the code knows."""

from pathlib import Path

from shared.errors import ErrorCode
from shared.messages.clear import STEPS

DOC = (Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")


def test_every_error_code_and_step_is_documented() -> None:
    for code in ErrorCode:
        assert code.value in DOC, code
    for step in STEPS:
        assert step.value in DOC, step
