"""Secrets, artifacts, captured output, tolerated failures and a step timeout.

Store the demo secret first (the value is read from stdin, never argv):

    printf %s 's3cr3t-demo-token' | danube secret set DEMO_TOKEN

Without it the pipeline still runs and says how to add it. Run it with
`danube run examples/release`.
"""

from danube import SecretError, artifacts, ctx, pipeline, secrets, step


@pipeline(name="release")
def release() -> None:
    version = step.run("cat VERSION", name="read version", capture=True).strip()
    print(f"releasing version {version} from commit {ctx.commit_sha or '(not a Git checkout)'}")

    # A failing check that is allowed to fail: the exit code decides.
    code = step.run("grep -q TODO CHANGELOG.md", name="look for TODOs", check=False)
    if code == 0:
        print("CHANGELOG.md still has TODO entries")

    # A step that would hang is stopped after its timeout; with check=False
    # the pipeline goes on and gets exit code 124.
    code = step.run("sleep 30", name="slow mirror", timeout=2, check=False)
    print(f"the mirror step ended with exit code {code}")

    try:
        token = secrets.get("DEMO_TOKEN")
    except SecretError as err:
        print(f"skipping the signed manifest: {err}")
        token = ""
    if token:
        # The token reaches the step through env=; the echo shows that the
        # log masks it. Only a digest of it goes into the artifact.
        step.run(
            'echo "signing with $TOKEN" && mkdir -p dist'
            ' && printf %s "$TOKEN" | sha256sum > dist/signature.txt',
            name="sign",
            env={"TOKEN": token},
        )

    step.run(
        f"mkdir -p dist && tar czf dist/app-{version}.tar.gz VERSION CHANGELOG.md",
        name="bundle",
    )
    artifacts.upload(f"dist/app-{version}.tar.gz")
    artifacts.upload("dist", name="dist")
