"""AffectLab's inference: checkpoints, faces, emotions, videos, engagement, fine-tuning (no Streamlit here)."""
