"""The layers of gpulayers, with Keras 3's names and arguments."""

from gpulayers import serialization
from gpulayers.serialization import deserialize, serialize

from gpulayers.layers.activations import ELU, LeakyReLU, ReLU, Softmax
from gpulayers.layers.base import Layer, Variable
from gpulayers.layers.input_spec import InputSpec
from gpulayers.layers.convolutional import (
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    Convolution1D,
    Convolution2D,
    Convolution2DTranspose,
)
from gpulayers.layers.core import Activation, Dense, Embedding
from gpulayers.layers.input_layer import Input, InputLayer
from gpulayers.layers.lambda_layer import Lambda
from gpulayers.layers.merging import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from gpulayers.layers.normalization import BatchNormalization
from gpulayers.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AvgPool1D,
    AvgPool2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPool1D,
    MaxPool2D,
    MaxPooling1D,
    MaxPooling2D,
    StochasticPooling2D,
)
from gpulayers.layers.regularization import Dropout
from gpulayers.layers.rnn import LSTM, LSTMCell
from gpulayers.layers.reshaping import (
    Cropping2D,
    Flatten,
    Permute,
    RepeatVector,
    Reshape,
    UpSampling2D,
    ZeroPadding2D,
)

__all__ = [
    "ELU",
    "LeakyReLU",
    "ReLU",
    "Softmax",
    "deserialize",
    "serialize",
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNormalization",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Convolution1D",
    "Convolution2D",
    "Convolution2DTranspose",
    "Cropping2D",
    "Dense",
    "Dot",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Input",
    "InputLayer",
    "InputSpec",
    "LSTM",
    "LSTMCell",
    "Lambda",
    "Layer",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "Permute",
    "RepeatVector",
    "Reshape",
    "StochasticPooling2D",
    "Subtract",
    "UpSampling2D",
    "Variable",
    "ZeroPadding2D",
    "add",
    "average",
    "concatenate",
    "dot",
    "maximum",
    "minimum",
    "multiply",
    "subtract",
]

# The classes gpulayers knows by name: the only ones a config may instantiate.
LAYER_CLASSES = {
    cls.__name__: cls
    for cls in (
        ELU,
        LeakyReLU,
        ReLU,
        Softmax,
        Activation,
        Add,
        Average,
        AveragePooling1D,
        AveragePooling2D,
        BatchNormalization,
        Concatenate,
        Conv1D,
        Conv2D,
        Conv2DTranspose,
        Cropping2D,
        Dense,
        Dot,
        Dropout,
        Embedding,
        Flatten,
        GlobalAveragePooling1D,
        GlobalAveragePooling2D,
        GlobalMaxPooling1D,
        GlobalMaxPooling2D,
        InputLayer,
        LSTM,
        LSTMCell,
        Lambda,
        Maximum,
        MaxPooling1D,
        MaxPooling2D,
        Minimum,
        Multiply,
        Permute,
        RepeatVector,
        Reshape,
        StochasticPooling2D,
        Subtract,
        UpSampling2D,
        ZeroPadding2D,
    )
}
LAYER_CLASSES.update(
    MaxPool1D=MaxPooling1D,
    AvgPool1D=AveragePooling1D,
    GlobalAvgPool1D=GlobalAveragePooling1D,
    GlobalMaxPool1D=GlobalMaxPooling1D,
    Convolution1D=Conv1D,
    MaxPool2D=MaxPooling2D,
    AvgPool2D=AveragePooling2D,
    GlobalAvgPool2D=GlobalAveragePooling2D,
    GlobalMaxPool2D=GlobalMaxPooling2D,
    Convolution2D=Conv2D,
    Convolution2DTranspose=Conv2DTranspose,
)


def _register():
    serialization.register_base(Layer)
    for name, cls in LAYER_CLASSES.items():
        serialization.register_builtin(name, cls)


_register()
