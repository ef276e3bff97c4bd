from recsys_rl.cli.main import app

app(prog_name="recsys-rl")
