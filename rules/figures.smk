# Pictures of the run, drawn from summary.json, and shown by `snakemake --report report.html`.
from snakemake.utils import format as snakemake_format

from scripts import forked
from scripts.summary import FIGURES as FIGURE_TITLES

FIGURES = [f"{RUN}/figures/{name}.png" for name in FIGURE_TITLES]


rule figures:
    input:
        f"{RUN}/summary.json",
    output:
        **{
            name: report(
                f"{RUN}/figures/{name}.png", caption=f"../report/{name}.rst", category="Run", labels={"figure": title}
            )
            for name, title in FIGURE_TITLES.items()
        },
    log:
        f"{RUN}/logs/figures.log",
    localrule: True
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    run:
        # `shell: "python -m ... > {log} 2>&1"`, forked from a process that imported matplotlib once
        forked.run_command(
            snakemake_format("python -m scripts.figures --summary {input:q} --out-dir {params.out_dir:q}"), log[0]
        )
