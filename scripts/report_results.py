"""Write RESULTS.md, tables/claims.csv and tables/evidence.csv: every claim of the study,
judged on the evidence the tasks handed in."""

from saeprobe.jobs import job
from saeprobe.summary import write_results

out = snakemake.output
with job(snakemake) as j:
    write_results(
        snakemake.input.evidence,
        j.params.setting,
        out.results,
        out.claims,
        out.evidence,
        out.figure,
        atlas=j.params.atlas,
    )
