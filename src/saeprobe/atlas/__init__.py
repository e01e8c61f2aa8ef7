"""The latent atlas: a static, self-contained web page per SAE of every alive latent.

`stats` summarises an SAE's codes on its evaluation dataset (frequency, mean activation, top
examples, histogram, decoder neighbours; numpy only), `roles` gathers what the tasks wrote
about each latent, `media` writes the thumbnails and texts shared by every SAE of a dataset,
`page` writes the pages, and `build` runs all of it for a pipeline's SAEs.
"""
