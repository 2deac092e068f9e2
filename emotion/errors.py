"""The one error type the project raises for bad input, so callers can turn it into a 4xx or a CLI message."""


class EmotionError(ValueError):
    """Bad input (image, model source, option). The message says what to send instead.

    `status` is the HTTP status the web app answers with (400 unless a subclass says otherwise).
    """

    status = 400


class ImageTooLargeError(EmotionError):
    status = 413


class UnsupportedImageError(EmotionError):
    status = 415
