"""What a V2 inference request may ask for, checked before any image is decoded: the
number of images and the pixels they will be coded at, read from their headers alone,
so a refused request costs no work."""

from __future__ import annotations

import io

from PIL import Image

from services.analytics.routes.analysis import is_bitstream
from services.analytics.settings import Settings
from services.common.errors import ErrorCode, ServiceError, to_service_error
from transtic.bitstream import peek_header
from transtic.images import DEFAULT_ALIGNMENT


def check_image_count(count: int, settings: Settings) -> None:
    cap = settings.v2_image_cap
    if count > cap:
        raise ServiceError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{count} images in one request; the limit is {cap} images (v2_max_images, at "
            "most max_queue): split the request",
        )


def coded_pixels(data: bytes, settings: Settings) -> int:
    """What coding ``data`` will cost, in coded pixels, from its header alone."""
    if is_bitstream("", data):
        try:
            height, width = peek_header(data, max_pixels=settings.max_pixels).coded_size
        except Exception as exc:
            raise to_service_error(exc) from None
        return height * width
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ServiceError(ErrorCode.INVALID_ARGUMENT, "not a decodable image") from None
    return -(-height // DEFAULT_ALIGNMENT) * -(-width // DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT**2


def check_predicted_pixels(elements: list[bytes], settings: Settings) -> None:
    total = sum(coded_pixels(data, settings) for data in elements)
    if total > settings.v2_max_request_pixels:
        raise ServiceError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the request's images would be coded as {total} pixels together; the limit is "
            f"{settings.v2_max_request_pixels} (v2_max_request_pixels): split the request",
        )
