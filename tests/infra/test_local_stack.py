"""The local stack's pieces that need no services: its env file, what it prints, stopping process trees."""

import json
import subprocess
import sys

from infra.local_stack import LocalStack, read_env_file, write_env_file
from infra.processes import ProcessRecord, family, is_running, record, stop, wait_for


def test_given_values_with_shell_characters_when_written_then_bash_and_the_reader_get_them_back_privately(tmp_path):
    env = {"PLAIN": "http://127.0.0.1:9000", "ODD": "a b'c\"$HOME;`x`", "AWS_SECRET_ACCESS_KEY": "s3cr3t/+="}
    path = tmp_path / "env.sh"
    path.write_text("stale")
    path.chmod(0o644)
    write_env_file(env, path)

    assert path.stat().st_mode & 0o777 == 0o600
    assert read_env_file(path) == env
    shell = subprocess.run(
        ["bash", "-c", '. "$1" && printf "%s" "$ODD"', "bash", str(path)], capture_output=True, text=True, check=True
    )
    assert shell.stdout == env["ODD"]
    assert read_env_file(tmp_path / "missing.sh") == {}


def test_given_a_stack_state_when_summarised_then_it_shows_the_settings_but_not_the_keys(tmp_path):
    stack = LocalStack(tmp_path)
    stack.state_file.write_text(
        json.dumps(
            {
                "pool": "local-process",
                "prefect_port": 4200,
                "processes": [],
                "urls": {
                    "s3": "http://127.0.0.1:1",
                    "mlflow": "http://127.0.0.1:2",
                    "prefect_api": "http://127.0.0.1:3/api",
                },
            }
        )
    )
    write_env_file(
        {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:2",
            "AWS_ACCESS_KEY_ID": "ssh-0123456789ab",
            "AWS_SECRET_ACCESS_KEY": "f" * 40,
        },
        stack.env_file,
    )

    summary = stack.summary()
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:2" in summary
    assert f"source {stack.env_file}" in summary
    assert "ssh-0123456789ab" not in summary and "f" * 40 not in summary
    assert stack.prefect().api_url == "http://127.0.0.1:4200/api"


def test_given_nothing_started_when_stopped_or_checked_then_it_says_so(tmp_path):
    stack = LocalStack(tmp_path / "none")
    assert stack.stop() is None and stack.health() is None
    status = subprocess.run(
        [sys.executable, "-m", "infra.local_stack", "status", "--state", str(stack.dir)], capture_output=True, text=True
    )
    assert status.returncode == 3 and "no local stack" in status.stdout


def test_given_a_process_whose_child_left_its_session_when_stopped_then_both_are_gone_and_a_second_stop_is_a_no_op():
    parent = subprocess.Popen(["bash", "-c", "setsid sleep 300 & sleep 300"], start_new_session=True)
    process = record("demo", parent.pid)
    try:
        assert wait_for(lambda: len(family(parent.pid)) == 3, 10.0)  # bash, its sleep, the setsid sleep
        members = family(parent.pid)
        assert stop(process, grace_s=5)
        assert not [pid for pid, started in members.items() if is_running(pid, started)]
        assert not stop(process)
    finally:
        parent.kill()
        parent.wait()


def test_given_a_recorded_pid_now_held_by_another_process_then_it_counts_as_stopped_and_is_left_alone():
    other = subprocess.Popen(["sleep", "300"])
    try:
        stale = ProcessRecord("old", other.pid, started=record("x", other.pid).started - 1)
        assert not is_running(stale.pid, stale.started)
        assert not stop(stale)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_given_a_component_that_does_not_come_up_in_time_when_starting_then_it_fails_with_its_log_and_leaves_nothing(
    tmp_path,
):
    state = tmp_path / "stack"
    started = subprocess.run(
        [sys.executable, "-m", "infra.local_stack", "start", "--state", str(state), "--timeout", "0.01"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 1
    assert "did not start" in started.stderr and "S3 gateway" in started.stderr, started.stderr
    assert not (state / "state.json").exists() and not (state / "env.sh").exists()
    leftovers = subprocess.run(["pgrep", "-f", f"-dir={state}"], capture_output=True, text=True)
    assert leftovers.stdout == ""
