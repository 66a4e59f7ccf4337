"""``python -m rtsr_arch.test -opt X.yml``: BasicSR's test pipeline with rtsr_arch registered."""
from rtsr_arch.cli import test

if __name__ == '__main__':
    test()
