"""A two-task gloo all_reduce across SLURM nodes: proves srun, hostnames and ports work before training does."""

import os

import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import SLURMEnvironment

env = SLURMEnvironment(auto_requeue=False)  # the address and port training will use
dist.init_process_group("gloo", init_method=f"tcp://{env.main_address}:{env.main_port}",
                        rank=env.global_rank(), world_size=env.world_size())
value = torch.tensor([float(env.global_rank() + 1)])
dist.all_reduce(value)
node = os.environ["SLURMD_NODENAME"]
print(f"rank {env.global_rank()}/{env.world_size()} on {node}: sum={value.item():g}", flush=True)
dist.destroy_process_group()
