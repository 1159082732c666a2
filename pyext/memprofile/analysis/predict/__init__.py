"""Predictions from a profile: what a run would reserve and need on another device."""
