from recsys_rl.cli import app

app(prog_name="recsys-rl")
