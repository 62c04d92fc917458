"""The layout holds: imports point one way (DESIGN.md), no module imports its way back to itself,
the model runtime stays free of Django, serving keeps to its own room (chat/serving/), every kind
of job names a task. (That the suite leaves no
run-time file in the checkout is checked when it ends: conftest.py.)"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Highest first: an app may import the apps below it, never one above.
ORDER = [
    "finetune",
    "optimiser",
    "review",
    "online",
    "monitoring",
    "evals",
    "chat",
    "prompts",
    "knowledge",
    "accounts",
    "studio",
    "studio.llm",
]
# Only wiring imports every app.
WIRING = {
    "studio/urls.py",
    "studio/asgi.py",
    "studio/settings.py",
    "studio/celery.py",
    "studio/cli.py",
    "studio/management/commands/serve.py",
}


def product_modules() -> dict[str, Path]:
    modules = {}
    for top in ORDER[:-1]:
        for path in (REPO / top).rglob("*.py"):
            relative = path.relative_to(REPO)
            if "tests" in relative.parts or "migrations" in relative.parts:
                continue
            name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def layer(module: str) -> str:
    return "studio.llm" if module.startswith("studio.llm") else module.split(".")[0]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every product module `path` imports, at its top or inside a function (a lazy import counts)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_every_import_points_down_the_order():
    modules = product_modules()
    wrong = []
    for name, path in modules.items():
        relative = str(path.relative_to(REPO))
        if relative in WIRING:
            continue
        for target in imports_of(name, path, set(modules)):
            if ORDER.index(layer(target)) < ORDER.index(layer(name)):
                wrong.append(f"{relative} imports {target}")
    assert not wrong, "imports against the order " + " > ".join(ORDER) + ":\n" + "\n".join(sorted(wrong))


def test_no_module_imports_its_way_back_to_itself():
    modules = product_modules()
    graph = {
        name: imports_of(name, path, set(modules))
        for name, path in modules.items()
        if str(path.relative_to(REPO)) not in WIRING
    }
    circles = set()

    def visit(name, trail):
        for target in graph.get(name, ()):
            if target in trail:
                circle = trail[trail.index(target) :]
                start = circle.index(min(circle))
                circles.add(" → ".join(circle[start:] + circle[:start] + [min(circle)]))
            elif len(trail) < 12:
                visit(target, trail + [target])

    for name in graph:
        visit(name, [name])
    # A package's __init__ importing its own submodules is how Python packages work, not a circle.
    circles = {
        c
        for c in circles
        if not all(part.startswith(c.split(" → ")[0].split(".")[0]) and "." not in part for part in c.split(" → "))
    }
    assert not circles, "modules that import their way back to themselves:\n" + "\n".join(sorted(circles))


# The lease protocol between the queue and the model workers: serving's alone.
LEASE_FUNCTIONS = {
    "reply_claim",
    "reply_claim_next",
    "reply_renew_lease",
    "replies_save_text",
    "reply_finish",
    "replies_fail_expired",
    "worker_heartbeat",
    "worker_forget",
}


def test_serving_keeps_to_its_own_room():
    """chat/services.py holds conversation writes and chat/selectors.py conversation reads: no
    function of serving (the queue, its leases, the models served) is defined there, and only
    chat/serving/ claims, renews and finishes replies (tests aside)."""
    serving = set(LEASE_FUNCTIONS)
    for path in (REPO / "chat" / "serving").glob("*.py"):
        serving |= {
            node.name
            for node in ast.parse(path.read_text()).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
    misplaced = [
        f"chat/{name}.py defines {node.name}"
        for name in ("services", "selectors")
        for node in ast.parse((REPO / "chat" / f"{name}.py").read_text()).body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in serving
    ]
    for name, path in product_modules().items():
        if name.startswith("chat.serving"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used = [node.attr]
            elif isinstance(node, ast.Name):
                used = [node.id]
            elif isinstance(node, ast.ImportFrom):
                used = [alias.name for alias in node.names]
            else:
                continue
            misplaced += [f"{path.relative_to(REPO)} uses {name}" for name in used if name in LEASE_FUNCTIONS]
    assert not misplaced, "serving outside chat/serving/:\n" + "\n".join(sorted(set(misplaced)))


def test_the_model_runtime_imports_no_django():
    for path in (REPO / "studio" / "llm").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("django", "channels", "celery")], path


def test_every_kind_of_job_names_a_task_the_job_workers_run():
    """Jobs are sent by task name (studio.jobs.dispatch): a name no worker knows would be dropped."""
    import django.apps

    from studio.celery import app
    from studio.jobs import JobRecord

    app.loader.import_default_modules()
    kinds = [model for model in django.apps.apps.get_models() if issubclass(model, JobRecord)]
    assert {model.__name__ for model in kinds} >= {"Evaluation", "ImportDraft", "FineTuneJob"}
    for model in kinds:
        assert model.TASK in app.tasks, f"{model.__name__}.TASK = {model.TASK!r} is no registered task"
