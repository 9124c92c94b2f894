"""The plain way to serve a model, as the FastAPI and PyTorch tutorials write it: the baseline of `tlearn serve`.

    PLAIN_BUNDLE=runs/demo python -m uvicorn benchmarks.plain_server:app --port 8001

One `async` endpoint, `POST /predict` with a multipart `file`, that opens the upload with Pillow, runs
torchvision's Resize / CenterCrop / ToTensor and the bundle's own network in eager PyTorch on that one
image, on the event loop, and answers the most probable class: the same network and settings as the bundle
(its input size and mirror averaging), so the same answers, one image per forward pass and one request at
a time. Nothing of tlearn is used but the loading of the bundle's network (`predict_speed.plain_network`, as
the plain way of prediction has it).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, UploadFile
from PIL import Image

from benchmarks.predict_speed import plain_network

transform, model, classes = plain_network(Path(os.environ["PLAIN_BUNDLE"]))
app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(file: UploadFile) -> dict[str, Any]:
    image = Image.open(io.BytesIO(await file.read())).convert("RGB")
    with torch.no_grad():
        proba = model(transform(image).unsqueeze(0)).softmax(1)[0]
    best = int(proba.argmax())
    return {"class": classes[best], "probability": float(proba[best])}
