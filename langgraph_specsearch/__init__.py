"""SpecSearch as LangGraph graphs."""
