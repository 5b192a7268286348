"""Few-shot supernets (Few-shot NAS, Zhao et al., ICML 2021): split a trained supernet into one part
per number of transformer stages, fine-tune each part on its own subnets, and search, export or check
the parts as one supernet.

1. Train each part from the whole-space supernet, with its recipe (one run per part; they may run at
   the same time)::

       python -m autovit_ray.train --config cifar10 --name xxs-t3 --supernets xxs --set train.epochs=10 \\
           --set train.transformer_stages=3 --set train.init_from=<supernet checkpoint or experiment>

2. Name the finished parts in a few-shot folder::

       python -m autovit_ray.fewshot --out fewshot-xxs --part 3=<part 3 checkpoint> --part 4=<...>

3. Give that folder wherever a supernet checkpoint goes (`search`, `export`, `fidelity`): each subnet is
   scored by the part that holds it (`autovit_ray.nn.FewShotSupernet`).

The folder's reading and writing live beside the checkpoints they name (`autovit_ray.checkpoint`:
`write_few_shot`, `read_few_shot`, `load_supernet`); this package is the command, importing no torch
until it runs.
"""
