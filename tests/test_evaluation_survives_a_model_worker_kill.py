"""`kill -9` of the model worker in the middle of an evaluation: the cases it was answering were
stored as failed results and counted as fails, and the evaluation ended "finished" with no note.
Now they are asked again (another worker, or this one restarted) and the evaluation says so.
Real daphne, model workers, job worker, PostgreSQL and Redis."""

import pytest

from benchmarks.processes import running_studio, start_process, stop_process
from tests.scaled import query, wait_for_workers, wait_until
from tests.test_job_worker import api, set_up, wait_for

pytestmark = pytest.mark.scaled


async def test_the_cases_a_killed_model_worker_was_answering_are_asked_again(scaled_env, tmp_path):
    env, database = scaled_env
    env = {**env, "EVAL_BATCH_SIZE": "4", "LLM_MIN_NEW_TOKENS": "48"}  # replies take a moment: the kill finds some
    with running_studio(env, tmp_path, workers=1) as studio:
        job_worker = start_process(["job_worker"], env, tmp_path / "job-worker.log")
        try:
            await wait_for_workers(database, 1)
            set_up(studio, env, cases=8, reply_tokens=48)
            _, created = api(
                studio,
                "POST",
                "/api/evaluations/",
                {"prompt": "order-json", "scorers": [{"type": "contains", "text": "{"}]},
            )
            await wait_until(
                lambda: (
                    query(
                        database,
                        "SELECT count(*) FROM chat_message m JOIN chat_conversation c "
                        "ON c.id = m.conversation_id WHERE c.kind = 'evaluation' "
                        "AND m.status = 'streaming'",
                    )[0][0]
                    > 0
                ),
                timeout=120,
                what="a case being answered",
            )
            studio.workers[0].kill()  # SIGKILL, mid-reply
            studio.workers.append(start_process(["llm_worker"], env, tmp_path / "worker-2.log"))
            final = wait_for(studio, created["id"], lambda s: s["status"] not in ("queued", "running"), timeout=300)
        finally:
            stop_process(job_worker)
    assert final["status"] == "finished" and final["done"] == final["total"] == 8, final
    assert final["retried"] >= 1 and final["errored"] == 0, final
    assert "asked again after the model worker" in final["model_errors_note"]
    assert not [result for result in final["results"] if "error_code" in result or "error" in result]
