"""`python -m rollbot.bot.cli`: the full CLI, typer and every group loaded before anything runs
(the console script, bot/breakglass.py, stores a kill's hold first)."""

from rollbot.bot.cli.app import main

main()
