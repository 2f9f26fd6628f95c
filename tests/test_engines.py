"""Choosing the local engine (--engine auto|transformers|llamacpp); no model is loaded."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from langgraph_specsearch import engines
from langgraph_specsearch.backends import llamacpp_context
from langgraph_specsearch.cli import app

EMBEDDED = ["smollm2-135m", "gemma3-270m"]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_context, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(engines, "gpu_present", lambda: False)


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_context, "llama_cpp_available", lambda: False)


def test_auto_picks_llamacpp_for_embedded_models_when_installed(installed: None) -> None:
    engine, why = engines.choose_engine("auto", EMBEDDED, needs_sd=False)
    assert engine == "llamacpp" and "installed" in why


def test_auto_falls_back_to_transformers_and_says_why(installed: None, tmp_path) -> None:
    assert engines.choose_engine("auto", EMBEDDED, needs_sd=True)[0] == "transformers"
    assert engines.choose_engine("auto", EMBEDDED, needs_sd=False, dtype="bfloat16") == (
        "transformers",
        "--dtype bfloat16 is a transformers option",
    )
    hub = engines.choose_engine("auto", ["HuggingFaceTB/SmolLM2-360M"], needs_sd=False)
    assert hub == ("transformers", "a model is not a GGUF")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert engines.choose_engine("auto", [str(gguf)], needs_sd=False)[0] == "llamacpp"


def test_the_default_dtype_given_explicitly_changes_no_engine(installed: None) -> None:
    default = engines.choose_engine("auto", EMBEDDED, needs_sd=False)
    assert engines.choose_engine("auto", EMBEDDED, needs_sd=False, dtype="float32") == default
    assert default[0] == "llamacpp"
    assert engines.choose_engine("llamacpp", EMBEDDED, needs_sd=False, dtype="float32")[0] == (
        "llamacpp"
    )
    for dtype in ("float16", "bfloat16"):  # a real transformers choice still picks it
        engine, why = engines.choose_engine("auto", EMBEDDED, needs_sd=False, dtype=dtype)
        assert engine == "transformers" and f"--dtype {dtype}" in why
        with pytest.raises(ValueError, match=f"--dtype {dtype} applies to --engine transformers"):
            engines.choose_engine("llamacpp", EMBEDDED, needs_sd=False, dtype=dtype)


def test_auto_keeps_gpu_work_off_a_cpu_only_llamacpp(
    installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engines, "llama_cpp_offloads", lambda: False)
    assert engines.choose_engine("auto", EMBEDDED, needs_sd=False, device="cpu")[0] == "llamacpp"
    engine, why = engines.choose_engine("auto", EMBEDDED, needs_sd=False, device="cuda")
    assert engine == "transformers" and "GPU" in why
    monkeypatch.setattr(engines, "gpu_present", lambda: True)
    assert engines.choose_engine("auto", EMBEDDED, needs_sd=False)[0] == "transformers"
    monkeypatch.setattr(engines, "llama_cpp_offloads", lambda: True)
    assert engines.choose_engine("auto", EMBEDDED, needs_sd=False)[0] == "llamacpp"


def test_auto_without_the_extra_is_transformers(missing: None) -> None:
    engine, why = engines.choose_engine("auto", EMBEDDED, needs_sd=False)
    assert engine == "transformers" and "[llamacpp]" in why


def test_llamacpp_asked_for_but_impossible_is_a_one_line_error(missing: None) -> None:
    with pytest.raises(ValueError, match=r"pip install 'langgraph-specsearch\[llamacpp\]'"):
        engines.choose_engine("llamacpp", EMBEDDED, needs_sd=False)


def test_llamacpp_refuses_speculation_dtype_and_non_gguf(installed: None) -> None:
    with pytest.raises(ValueError, match="--engine transformers"):
        engines.choose_engine("llamacpp", EMBEDDED, needs_sd=True)
    with pytest.raises(ValueError, match="--dtype"):
        engines.choose_engine("llamacpp", EMBEDDED, needs_sd=False, dtype="float16")
    with pytest.raises(ValueError, match="embedded models or .gguf files"):
        engines.choose_engine("llamacpp", ["HuggingFaceTB/SmolLM2-360M"], needs_sd=False)
    assert engines.choose_engine("transformers", EMBEDDED, needs_sd=True)[0] == "transformers"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "llamacpp", "--method", "sps"], "--engine transformers"),
        (["--engine", "vllm"], "--engine"),
        (["--engine", "llamacpp", "--dtype", "float16"], "--dtype"),
    ],
)
def test_cli_engine_errors_are_one_line_exit_2(
    installed: None, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["solve", "q", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_missing_extra_message_is_one_line() -> None:
    assert "\n" not in llamacpp_context.MISSING_EXTRA
    assert "pip install 'langgraph-specsearch[llamacpp]'" in llamacpp_context.MISSING_EXTRA
