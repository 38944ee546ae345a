"""What a fit answers: the memory model, published presets, caveats, and the bit-width recommendation."""
