"""The train and evaluate stages: ranks in one Spark barrier stage (`barrier`, `feed`, `epochs`, `torch_rank`,
`tensorflow_rank`, launched by `fit`), the train stage (`train`) and the evaluate stage (`evaluate`)."""
