"""Where every file of an experiment lives (docs/design.md, "Results layout"): the one place paths are
spelled, for the rules and the Python code alike.

Each method takes numbers for one file, or Snakemake wildcards for a rule's pattern:
`Layout("x").predictions("{cond}", "{t}", "{p}", "{c}")` is the pattern whose file for
(coupled-to-t, 6, 0, 1) is `Layout("x").predictions("coupled-to-t", 6, 0, 1)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Part = int | str  # a number, or a wildcard pattern such as "{t}"

# The member files of a training job are named for the job's members; its log and benchmark files
# for the job, whose extent `job_shape` sets.
JOB_NAMES = {
    "member": "{cond}/t{t}/p{p}/c{c}",
    "children": "{cond}/t{t}/p{p}/children",
    "condition": "{cond}/t{t}/members",
}


def member_key(cond: str, t: Part, p: Part, c: Part) -> str:
    return f"{cond}/t{t}/p{p}/c{c}"


RESUME_SUFFIX = ".resume.pt"


def resume_path(output: str | Path) -> str:
    """The in-job checkpoint beside a job's first output (`X.pt` -> `X.resume.pt`)."""
    return str(output).removesuffix(".pt") + RESUME_SUFFIX


def resumed_output(resume: str | Path) -> str:
    """The output an in-job checkpoint stands beside (`X.resume.pt` -> `X.pt`; `resume_path` inverted)."""
    return str(resume).removesuffix(RESUME_SUFFIX) + ".pt"


@dataclass(frozen=True)
class Layout:
    experiment: str
    results: str = "results"
    logs_root: str = "logs"

    @property
    def exp(self) -> str:
        return f"{self.results}/{self.experiment}"

    @property
    def logs(self) -> str:
        return f"{self.logs_root}/{self.experiment}"

    @property
    def benchmarks(self) -> str:
        return f"{self.exp}/benchmarks"

    def folders(self) -> list[str]:
        """The folders that hold the experiment's files, checked before a run (`files.unwritable`)."""
        results = ("parents", "children", "predictions", "trajectories", "barriers", "metrics", "figures", "report")
        logs = ("parents", "children", "barriers", "metrics", "figures", "report")
        return [
            self.exp,
            self.logs,
            self.benchmarks,
            *(f"{self.exp}/{name}" for name in results),
            *(f"{self.logs}/{name}" for name in logs),
        ]

    # data and parents
    @property
    def data(self) -> str:
        return f"{self.exp}/data.pt"

    @property
    def data_log(self) -> str:
        return f"{self.logs}/prepare_data.log"

    def parent_state(self, p: Part, t: Part) -> str:
        return f"{self.exp}/parents/p{p}/step{t}.pt"

    def parent_log(self, p: Part, t: Part) -> str:
        return f"{self.logs}/parents/p{p}/step{t}.log"

    def parent_benchmark(self, p: Part, t: Part) -> str:
        return f"{self.benchmarks}/parent_state/p{p}/step{t}.tsv"

    # members
    def final(self, cond: str, t: Part, p: Part, c: Part) -> str:
        return f"{self.exp}/children/{member_key(cond, t, p, c)}/final.pt"

    def predictions(self, cond: str, t: Part, p: Part, c: Part) -> str:
        return f"{self.exp}/predictions/{member_key(cond, t, p, c)}.parquet"

    def trajectory(self, cond: str, t: Part, p: Part, c: Part) -> str:
        return f"{self.exp}/trajectories/{member_key(cond, t, p, c)}.parquet"

    def member_file(self, kind: str, cond: str, t: Part, p: Part, c: Part) -> str:
        """`kind`: final, predictions or trajectory."""
        return getattr(self, kind)(cond, t, p, c)

    def job_log(self, shape: str, cond: str, t: Part, p: Part = "{p}", c: Part = "{c}") -> str:
        return f"{self.logs}/children/{JOB_NAMES[shape].format(cond=cond, t=t, p=p, c=c)}.log"

    def job_benchmark(self, shape: str, cond: str, t: Part, p: Part = "{p}", c: Part = "{c}") -> str:
        return f"{self.benchmarks}/train_members/{JOB_NAMES[shape].format(cond=cond, t=t, p=p, c=c)}.tsv"

    # barriers
    def barrier(self, cond: str, t: Part, p: Part) -> str:
        return f"{self.exp}/barriers/{cond}/t{t}/p{p}.parquet"

    def barrier_weights(self, cond: str, t: Part, p: Part) -> str:
        """The weight-space distances between the same children, written by the same job."""
        return f"{self.exp}/barriers/{cond}/t{t}/p{p}.weights.parquet"

    def barrier_log(self, cond: str, t: Part, p: Part) -> str:
        return f"{self.logs}/barriers/{cond}/t{t}/p{p}.log"

    def barrier_benchmark(self, cond: str, t: Part, p: Part) -> str:
        return f"{self.benchmarks}/barrier/{cond}/t{t}/p{p}.tsv"

    # analysis
    def table(self, name: str) -> str:
        """A metrics table: members, ensembles, pairs, forgetting, barriers, weights, onset, curves
        (Parquet); summary (CSV)."""
        return f"{self.exp}/metrics/{name}.{'csv' if name == 'summary' else 'parquet'}"

    @property
    def claims(self) -> str:
        return f"{self.exp}/claims.csv"

    def analysis_log(self, name: str) -> str:
        """The log of an analysis job: metrics, barriers (the barrier, weight and onset tables), curves,
        claims."""
        return f"{self.logs}/{name}.log" if name not in ("barriers", "curves") else f"{self.logs}/metrics/{name}.log"

    def figure(self, name: str, ext: str) -> str:
        return f"{self.exp}/figures/{name}.{ext}"

    def figure_log(self, name: str) -> str:
        return f"{self.logs}/figures/{name}.log"

    def table_page(self, name: str) -> str:
        """The HTML page of the claims or summary table, which the report shows."""
        return f"{self.exp}/report/{name}.html"

    def table_page_log(self, name: str) -> str:
        return f"{self.logs}/report/{name}.log"

    @property
    def report(self) -> str:
        return f"{self.exp}/report.html"
