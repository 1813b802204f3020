"""snrlab control plane: FastAPI app, settings, SQL models, dispatcher, leaderboard."""
