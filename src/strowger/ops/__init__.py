"""Operations: metrics, the schema registry API and other operator-facing surfaces."""
