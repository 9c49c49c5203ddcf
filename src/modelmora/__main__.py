"""``python -m modelmora``: the same as the ``modelmora`` command."""

from modelmora.cli import main

if __name__ == "__main__":
    main(prog_name="modelmora")
