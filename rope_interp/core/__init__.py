"""The core: how each kind of model exposes its rotary q/k (`backends/`), the rotary geometry
(`spec`), the pure maths of pairs and score decompositions (`pairs`, `pair_reduction`, `tiled`),
capturing q/k through hooks (`capturing`), the one batch loop (`runner`) and streaming statistics
(`stats`)."""
