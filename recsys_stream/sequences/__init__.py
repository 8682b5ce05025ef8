"""Each user's ratings in time order: LSTM/GRU models, their inputs, stream, task and baselines."""
