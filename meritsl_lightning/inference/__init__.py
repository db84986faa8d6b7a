"""Using a trained chain on new conversations: model bundles (export, verified loading) and the analysis engine
(turn inputs, long recordings, Stage I once per turn, Stage II/III over the conversation so far, outputs)."""
