"""Classic policies every fine-tune is held against, evaluated like any other policy."""
