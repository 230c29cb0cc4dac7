"""``python -m sagan_ad.cli`` runs the ``sagan-ad`` command."""

from sagan_ad.cli import main

main()
