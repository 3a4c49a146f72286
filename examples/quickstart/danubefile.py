"""A first pipeline: one implicit task whose steps run in order.

Run it with `danube run examples/quickstart`.
"""

from danube import ctx, pipeline, step


@pipeline(name="quickstart")
def quickstart() -> None:
    print(f"job {ctx.job_id} running in {ctx.workspace}")

    step.run("echo 'hello from a step' && uname -a", name="hello")
    step.run("ls -la", name="list workspace")

    # Each step is a fresh shell: this variable does not reach the next one.
    step.run("export GREETING=hi && echo \"$GREETING\"", name="export")

    python_version = step.run("python3 --version", name="python version", capture=True)
    print(f"the worker has {python_version.strip()}")

    step.run("printf 'CI=%s job=%s\\n' \"$CI\" \"$DANUBE_JOB_ID\"", name="environment")
