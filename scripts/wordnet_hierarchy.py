"""Download ImageNet's WordNet files (checksummed, resumable) and write the hierarchy."""

from saeprobe.data.wordnet import download_wordnet
from saeprobe.jobs import job

with job(snakemake) as j:
    download_wordnet(j.params.is_a, j.params.words, snakemake.output[0])
