"""Evaluation metrics of paper 4.2, one file per family, each a torchmetrics ``Metric`` (update/compute):
``image`` (PSNR, SSIM), ``lpips`` (LPIPS AlexNet), ``fid`` (FID), ``csim`` (CSIM), ``lmd`` (LMD),
``sync`` (SyncScore), ``stylesim`` (StyleSim). A metric instance scores one video (reset between videos)
or, for FID, one method's whole frame set. Networks are passed in as built modules; ``eval.weights``
says where their files come from."""
