"""A graph of tasks that checks, tests and packages the `calc` package.

`lint`, `unit_tests` and `docs` only need `prepare`, so they run at the same
time; `package` waits for all three and uploads the result as an artifact.
Run it with `danube run examples/dag`.
"""

from danube import artifacts, pipeline, step, task


@task()
def prepare() -> None:
    step.run("rm -rf build && mkdir -p build", name="clean")
    step.run("python3 -c 'import sys; assert sys.version_info >= (3, 9), sys.version'", name="python")


@task(needs=[prepare])
def lint() -> None:
    step.run("python3 -m compileall -q calc", name="compile")
    step.run("python3 tools/check_style.py calc", name="style")


# `-B` keeps these imports from writing bytecode, so the `.pyc` files in the
# package come from `lint` alone and do not depend on which task ran first.
@task(needs=[prepare])
def unit_tests() -> None:
    step.run("python3 -B -m unittest discover -s calc/tests -t . -v", name="unittest")


@task(needs=[prepare])
def docs() -> None:
    step.run("python3 -B -m pydoc -w calc.arith && mv calc.arith.html build/", name="pydoc")


@task(needs=[lint, unit_tests, docs])
def package() -> None:
    step.run("python3 -m zipfile -c build/calc.zip calc", name="zip")
    step.run("python3 -m zipfile -l build/calc.zip", name="list")
    artifacts.upload("build/calc.zip")
    artifacts.upload("build", name="build-dir")


pipeline(name="calc", tasks=[package])
