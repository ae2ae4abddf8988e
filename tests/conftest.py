import os
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "aura" / "local"))  # the recipe's stage drivers (score_benchmark, ...)

from nemo_aura.testing import build_tiny_llm, tiny_conformer_teacher_cfg  # noqa: E402


def require_tools() -> bool:
    """tools/run_tests.sh installs the system tools before pytest starts and sets NEMO_AURA_REQUIRE_TOOLS=1."""
    return os.environ.get("NEMO_AURA_REQUIRE_TOOLS") == "1"


def needs(available: bool, reason: str):
    """Skip a test whose tool is missing, except under tools/run_tests.sh: there its set-up installed the tools,
    and one still missing fails the test instead of hiding it."""
    return pytest.mark.skipif(not available and not require_tools(), reason=reason)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm") / "llm")


@pytest.fixture
def tiny_cfg(tiny_llm_dir):
    """The tiny preset pointing at the session's tiny LLM (Whisper teacher)."""
    cfg = OmegaConf.load(ROOT / "conf" / "model" / "aura_tiny.yaml")
    cfg.student.pretrained_path = str(tiny_llm_dir)
    return cfg


@pytest.fixture
def tiny_conformer_cfg(tiny_cfg):
    cfg = tiny_cfg.copy()
    cfg.teacher = tiny_conformer_teacher_cfg()
    return cfg
