"""``python -m rtsr_arch.train -opt X.yml``: BasicSR's train pipeline with rtsr_arch registered."""
from rtsr_arch.cli import train

if __name__ == '__main__':
    train()
