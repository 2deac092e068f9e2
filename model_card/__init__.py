"""The model card template and its renderer: `from model_card.render import render_card`."""
