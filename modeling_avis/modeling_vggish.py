"""VGGish (Hershey et al., 2017), the audio encoder whose 128-d embeddings AVISM reads, one per one-second example.

The network of the TF original (`vggish_slim.py`) as torchvggish ports it: 3x3 convolutions with ReLU, 2x2 max-pools,
then fully connected layers with ReLU on every one, the 128-d embedding included. The AudioSet PCA whitening and 8-bit
quantisation are not part of it: AVISeg's features were taken before them (`vggish/embedding`).
"""

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init

from .configuration_avis import AvisVggishConfig


class AvisVggishPreTrainedModel(PreTrainedModel):
    config_class = AvisVggishConfig
    base_model_prefix = "vggish"
    main_input_name = "log_mel"

    def _init_weights(self, module):
        # vggish_slim.py: truncated normal (stddev 0.01) weights, zero biases.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            std = self.config.initializer_range
            if std is None:
                init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            init.zeros_(module.bias)


class AvisVggishModel(AvisVggishPreTrainedModel):
    """Log-mel examples (N, num_frames, num_mel_bins) -> embeddings (N, fc_sizes[-1])."""

    def __init__(self, config: AvisVggishConfig):
        super().__init__(config)
        channels = [1, *config.conv_channels]
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernel_size=3, padding=1) for i in range(len(config.conv_channels))
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        downsampling = 2 ** len(config.pool_after)
        flat_size = channels[-1] * (config.num_frames // downsampling) * (config.num_mel_bins // downsampling)
        widths = [flat_size, *config.fc_sizes]
        self.fc_layers = nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(len(config.fc_sizes)))
        self.activation = nn.ReLU()
        self.post_init()

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        hidden = log_mel.unsqueeze(1)  # (N, 1, frames, mel bins): time is the image height
        for index, conv in enumerate(self.conv_layers):
            hidden = self.activation(conv(hidden))
            if index in self.config.pool_after:
                hidden = self.pool(hidden)
        # Flattened channel-first; the TF original flattens channel-last, which the converter folds into fc_layers.0.
        hidden = hidden.flatten(1)  # (N, channels x frames / 16 x mel bins / 16)
        for fc in self.fc_layers:
            hidden = self.activation(fc(hidden))
        return hidden  # (N, fc_sizes[-1])

    def freeze(self) -> None:
        """Stops training the encoder: AVISM keeps the pre-trained VGGish fixed (its features were precomputed)."""
        self.requires_grad_(False)


AutoModel.register(AvisVggishConfig, AvisVggishModel, exist_ok=True)

__all__ = ["AvisVggishModel", "AvisVggishPreTrainedModel"]
