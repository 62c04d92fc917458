"""A search query is embedded without model code (the web process holds none): the torch-free
embedder gives the vectors the job workers' embedder gives documents, and the modules a search
goes through import neither torch nor transformers. Parsing and chunking import no Django."""

import subprocess
import sys

import numpy as np

from studio.llm.embeddings import load_embedder
from studio.llm.numpy_embedder import load_numpy_embedder
from tests.settings import REPO

TEXTS = [
    "How do I reset the router?",
    "ZX-4411",
    "Crème brûlée, naïve café — 3 €",
    "A long paragraph about presses. " * 80,
    "",
]


def test_the_torch_free_embedder_agrees_with_the_job_workers_one():
    numpy_vectors = load_numpy_embedder().embed(TEXTS)
    torch_vectors = load_embedder().embed(TEXTS).numpy()
    assert numpy_vectors.shape == torch_vectors.shape == (5, 384) and numpy_vectors.dtype == np.float32
    assert np.abs(numpy_vectors - torch_vectors).max() < 1e-5
    one_alone = load_numpy_embedder().embed(TEXTS[:1])  # padding in a batch changes nothing
    assert np.abs(one_alone[0] - numpy_vectors[0]).max() < 1e-5


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {
        "STUDIO_DATA_DIR": str(tmp_path),
        "SECRET_KEY": "test",
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "studio.settings",
    }
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_search_in_the_web_process_imports_no_model_code(tmp_path):
    done = run_python(
        """
import sys, django
django.setup()
import studio.urls, knowledge.api, knowledge.search, knowledge.services
from studio.llm.numpy_embedder import load_numpy_embedder
assert load_numpy_embedder().embed(["hello"]).shape == (1, 384)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
assert not loaded, loaded[:5]
""",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_parsing_and_chunking_need_no_django(tmp_path):
    done = run_python(
        """
import sys
from knowledge.chunking import Chunker
from knowledge.parsing import parse
pieces = Chunker(capacity=50, overlap=5).split(parse(b"# Title\\n\\nSome text.", kind="markdown").sections)
assert pieces[0].heading == "Title"
assert "django" not in sys.modules and "torch" not in sys.modules
""",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
