"""The paper rehearsal: a miniature hub (tiny random-init models in each library's format, tiny
datasets packed as their public archives) that `configs/rehearsal.yaml` points the paper config
at, so every job of the paper DAG runs offline on a CPU."""
