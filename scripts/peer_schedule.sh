# Sourced by the GPU scripts: PEER_FLAGS, train.py's flags for the gsplat peer's exact 7,000-step schedule
# (../shared/data/README.md), so that our runs on it and the peer's compare like with like.
PEER_FLAGS=(--iterations 7000 --densify_from_iter 116 --densify_until_iter 3500 --sh_increase_interval 234
            --position_lr_max_steps 7000 --no_opacity_reset --opacity_reset_interval 700 --opacity_lr 0.05)
