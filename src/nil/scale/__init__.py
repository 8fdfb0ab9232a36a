"""Scale layer: `nil sweep` runs many skills on Ray and collects their results."""
